-- Acks an input entry and appends an output entry in one step, so a crash
-- can neither lose the output nor produce it twice: if the input is no
-- longer pending (it was done already), nothing is appended.
--
-- KEYS[1]  the input stream
-- KEYS[2]  the output stream (same hash slot as KEYS[1])
-- KEYS[3]  the attempt marks of the input {S}:attempts (its mark is removed)
-- ARGV[1]  consumer group of the input
-- ARGV[2]  input entry ID
-- ARGV[3..] output field, value, field, value, …
--
-- Returns the output entry's ID, or false when the input was not pending.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then
  return false
end
local args = {KEYS[2], '*'}
for i = 3, #ARGV do
  args[#args + 1] = ARGV[i]
end
local id = redis.call('XADD', unpack(args))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
-- pcall: a least-privilege user (stream commands only) has no marks.
redis.pcall('HDEL', KEYS[3], ARGV[1] .. '\0' .. ARGV[2])
return id
