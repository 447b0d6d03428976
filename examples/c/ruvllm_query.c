/* ruvllm-query: ask ruvllm-edge one question and print the streamed answer.
 *
 *   ruvllm-query [-e ENDPOINT] [-n MAX_TOKENS] [-t TIMEOUT_S] QUESTION
 *
 * ENDPOINT defaults to $RUVLLM_EDGE_ENDPOINT, else the systemd service's socket.
 * Prints the answer as it streams, then "finish_reason: <reason>" on a line of
 * its own. Exit status: 0 done, 1 error reply (its code and message go to
 * stderr), 2 usage, 3 no reply in time or a transport failure.
 *
 * The protocol (docs/protocol.md): a DEALER socket sends one frame holding one
 * msgpack map {"v": 1, "id": "...", "op": "query", "args": {...}}; the daemon
 * answers with frames of msgpack maps carrying the same id: token events
 * {"event": "token", "text": ...}, then one final map with "ok" (true: the done
 * event with "result"; false: "error" with "code" and "message").
 */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define REQUEST_ID "1"

static void pack_str(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* The value stored under `key` in a msgpack map, or NULL. */
static const msgpack_object *get(const msgpack_object *map, const char *key) {
    if (map == NULL || map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/* Does `o` hold the string `s`? */
static int str_is(const msgpack_object *o, const char *s) {
    return o != NULL && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

/* Print a string value (or "?" when it is missing or not a string). */
static void print_str(FILE *f, const msgpack_object *o) {
    if (o != NULL && o->type == MSGPACK_OBJECT_STR)
        fwrite(o->via.str.ptr, 1, o->via.str.size, f);
    else
        fputs("?", f);
}

int main(int argc, char **argv) {
    const char *endpoint = getenv("RUVLLM_EDGE_ENDPOINT");
    long max_tokens = -1; /* -1: not sent, the daemon's router chooses */
    int timeout_s = 120;
    int opt;
    while ((opt = getopt(argc, argv, "e:n:t:")) != -1) {
        switch (opt) {
        case 'e': endpoint = optarg; break;
        case 'n': max_tokens = strtol(optarg, NULL, 10); break;
        case 't': timeout_s = atoi(optarg); break;
        default: goto usage;
        }
    }
    if (optind != argc - 1) goto usage;
    if (endpoint == NULL || *endpoint == '\0')
        endpoint = "ipc:///run/ruvllm-edge/ruvllm-edge.sock";

    /* The request: {"v": 1, "id": "1", "op": "query",
     *               "args": {"query": Q, "stream": true[, "constraints": {"max_tokens": N}]}} */
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pack_str(&pk, "v");    msgpack_pack_int(&pk, 1);
    pack_str(&pk, "id");   pack_str(&pk, REQUEST_ID);
    pack_str(&pk, "op");   pack_str(&pk, "query");
    pack_str(&pk, "args"); msgpack_pack_map(&pk, max_tokens >= 0 ? 3 : 2);
    pack_str(&pk, "query");  pack_str(&pk, argv[optind]);
    pack_str(&pk, "stream"); msgpack_pack_true(&pk);
    if (max_tokens >= 0) { /* passed as given: the daemon checks the range */
        pack_str(&pk, "constraints"); msgpack_pack_map(&pk, 1);
        pack_str(&pk, "max_tokens");  msgpack_pack_long(&pk, max_tokens);
    }

    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    int status = 3;
    if (zmq_connect(sock, endpoint) != 0 || zmq_send(sock, buf.data, buf.size, 0) < 0) {
        fprintf(stderr, "ruvllm-query: %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        goto done;
    }

    /* Read replies until the final one (the one that has "ok"). */
    for (;;) {
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, timeout_s * 1000L) <= 0) {
            fprintf(stderr, "ruvllm-query: no reply from %s within %d s\n", endpoint, timeout_s);
            goto done;
        }
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, sock, 0) < 0) {
            fprintf(stderr, "ruvllm-query: receive failed: %s\n", zmq_strerror(zmq_errno()));
            zmq_msg_close(&frame);
            goto done;
        }
        msgpack_unpacked msg;
        msgpack_unpacked_init(&msg);
        size_t off = 0;
        int parsed = msgpack_unpack_next(&msg, zmq_msg_data(&frame), zmq_msg_size(&frame), &off);
        const msgpack_object *m = parsed == MSGPACK_UNPACK_SUCCESS ? &msg.data : NULL;
        const msgpack_object *id = get(m, "id"), *ok = get(m, "ok");
        int final = 0;
        if (m == NULL || m->type != MSGPACK_OBJECT_MAP) {
            fprintf(stderr, "ruvllm-query: a reply is not a msgpack map\n");
            final = 1;
        } else if (!str_is(id, REQUEST_ID) && !(id != NULL && id->type == MSGPACK_OBJECT_NIL)) {
            /* another request's reply (nil id: an error about an unreadable message) */
        } else if (str_is(get(m, "event"), "token")) {
            print_str(stdout, get(m, "text"));
            fflush(stdout);
        } else if (ok != NULL && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean) {
            fputs("\nfinish_reason: ", stdout);
            print_str(stdout, get(get(m, "result"), "finish_reason"));
            fputs("\n", stdout);
            status = 0;
            final = 1;
        } else if (ok != NULL) {
            const msgpack_object *err = get(m, "error");
            fputs("ruvllm-query: error ", stderr);
            print_str(stderr, get(err, "code"));
            fputs(": ", stderr);
            print_str(stderr, get(err, "message"));
            fputs("\n", stderr);
            status = 1;
            final = 1;
        }
        msgpack_unpacked_destroy(&msg);
        zmq_msg_close(&frame);
        if (final) break;
    }

done:
    zmq_close(sock);
    zmq_ctx_term(ctx);
    msgpack_sbuffer_destroy(&buf);
    return status;

usage:
    fprintf(stderr, "usage: %s [-e ENDPOINT] [-n MAX_TOKENS] [-t TIMEOUT_S] QUESTION\n", argv[0]);
    return 2;
}
