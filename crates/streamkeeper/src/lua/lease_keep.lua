-- Renews (ARGV[2] > 0: lease time in ms) or releases (ARGV[2] = 0) a
-- lease, only if it still holds this owner's value: the token of a fenced
-- lease (ordered mode), the holder id of a plain one.
--
-- KEYS[1]  the lease
-- ARGV[1]  token (fenced) or holder id (plain)
-- ARGV[2]  lease time, ms; 0 to release
--
-- Returns 1 if the lease was this owner's, else 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
