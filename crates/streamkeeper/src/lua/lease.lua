-- Takes or renews a plain lease (the janitor of a stream, the retry
-- mover, the dashboard's history writer): succeeds when the key is free
-- or already ours. Renewal and release of any lease is lease_keep.lua.
--
-- KEYS[1]  the lease key ({S}:janitor, {S}:retry-mover, …)
-- ARGV[1]  holder id
-- ARGV[2]  lease time, in ms
--
-- Returns 1 when we hold the lease now, 0 when someone else does.
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
