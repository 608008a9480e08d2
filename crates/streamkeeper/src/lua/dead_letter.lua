-- Moves one pending entry to the dead-letter stream and acks it, atomically:
-- the entry is never in both places and never in neither.
--
-- KEYS[1]  the stream S
-- KEYS[2]  the dead-letter stream {S}:dlq
-- ARGV[1]  consumer group
-- ARGV[2]  entry ID
-- KEYS[3]  the attempt marks {S}:attempts (the entry's mark is removed)
-- ARGV[3]  attempts (handler runs, including earlier retries)
-- ARGV[4]  reason
-- ARGV[5]  now, in ms (sk-dead-at)
--
-- Returns the dead letter's ID, or false when the entry is no longer
-- pending in the group (someone acked or moved it already).
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then
  return false
end
-- pcall: a least-privilege user (stream commands only) has no marks.
redis.pcall('HDEL', KEYS[3], ARGV[1] .. '\0' .. ARGV[2])
local args = {KEYS[2], '*'}
local origin = ARGV[2]
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #found == 1 then
  local f = found[1][2]
  for i = 1, #f, 2 do
    local k = f[i]
    -- A retried entry carries the ID it started as; keep that one.
    if k == 'sk-origin-id' then
      origin = f[i + 1]
    elseif k ~= 'sk-retry-group' and k ~= 'sk-attempt' then
      args[#args + 1] = k
      args[#args + 1] = f[i + 1]
    end
  end
end
local meta = {
  'sk-origin', KEYS[1],
  'sk-origin-id', origin,
  'sk-group', ARGV[1],
  'sk-deliveries', ARGV[3],
  'sk-reason', ARGV[4],
  'sk-dead-at', ARGV[5],
}
for _, v in ipairs(meta) do
  args[#args + 1] = v
end
local id = redis.call('XADD', unpack(args))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
