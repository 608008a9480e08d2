-- Deletes a consumer from its group if it holds no pending entry, in one
-- step (XGROUP DELCONSUMER alone would drop what it holds). For consumer
-- names generated per process: a clean exit leaves no name behind.
--
-- KEYS[1]  the stream S
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name
--
-- Returns 1 when deleted (or already gone), 0 when it holds entries.
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #held > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
