-- 0004: what the model saw for a user turn (the question plus the memory
-- records packed into it), so later turns replay the same prompt: the
-- conversation stays coherent and the KV cache prefix is reused. NULL means
-- the same as `content` (the user's own text, which session.history shows).
ALTER TABLE turns ADD COLUMN prompt TEXT;
