-- Releases a lease if we still hold it.
--
-- KEYS[1]  the lease key
-- ARGV[1]  holder id
--
-- Returns 1 when released, 0 when it was not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
