-- Appends an entry at most once per dedupe key within a time window.
--
-- KEYS[1]  the stream
-- KEYS[2]  the dedupe key (same hash slot as the stream)
-- ARGV[1]  window, in ms
-- ARGV[2..] field, value, field, value, …
--
-- Returns {1, new id} when appended, {0, earlier id} when the key was
-- already used within the window.
local earlier = redis.call('GET', KEYS[2])
if earlier then
  return {0, earlier}
end
local args = {KEYS[1], '*'}
for i = 2, #ARGV do
  args[#args + 1] = ARGV[i]
end
local id = redis.call('XADD', unpack(args))
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return {1, id}
