-- 0008: take the model's ungrounded answers out of search.
--
-- Before this version every generated answer that passed a quality heuristic
-- was written back as a qa_pair, including invented ones ("The phone number
-- of our doctor is 123-456-7890"), and after a restart they outranked the
-- user's own note. From now on only answers grounded in a user-given record,
-- or rated well by the user, are written (metadata "grounded" / "confirmed").
-- The existing model answers carry neither mark; those no user rated well
-- (feedback rating >= 4 on the request that wrote them) are archived: kept
-- for history and export, out of default search. Nothing is deleted.
UPDATE nodes SET archived = 1
WHERE kind = 'qa_pair' AND source = 'model' AND archived = 0
  AND json_extract(metadata, '$.grounded') IS NULL
  AND json_extract(metadata, '$.confirmed') IS NULL
  AND NOT EXISTS (SELECT 1 FROM feedback f
                  WHERE f.request_id = nodes.request_id AND f.rating >= 4);
