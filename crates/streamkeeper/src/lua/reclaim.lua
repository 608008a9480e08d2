-- Reclaims the entries of crashed consumers, as XAUTOCLAIM does, but
-- leaves parked retries (`lua/retry_store.lua`) alone until they are due:
-- they are idle by design, and taking one early would run it before its
-- retry delay and outside its group's retry set.
--
-- KEYS[1]  the stream S
-- KEYS[2]  the group's retry set {S}:retry:<group>
-- ARGV[1]  consumer group
-- ARGV[2]  the consumer reclaiming
-- ARGV[3]  min idle time, ms
-- ARGV[4]  cursor (start ID)
-- ARGV[5]  COUNT
-- ARGV[6]  the reserved consumer that holds parked entries (sk-retry)
--
-- Returns XAUTOCLAIM's reply: {next cursor, {entries}, {deleted IDs}}.
-- Parked entries the scan met go back to ARGV[6] with their idle time
-- reset (the next scans skip them for min idle); nothing counts them as
-- delivered.
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
  'COUNT', ARGV[5], 'JUSTID')
local mine, parked = {}, {}
for _, id in ipairs(r[2]) do
  if redis.call('ZSCORE', KEYS[2], id) then
    parked[#parked + 1] = id
  else
    mine[#mine + 1] = id
  end
end
if #parked > 0 then
  local back = {KEYS[1], ARGV[1], ARGV[6], 0}
  for _, id in ipairs(parked) do
    back[#back + 1] = id
  end
  back[#back + 1] = 'JUSTID'
  redis.call('XCLAIM', unpack(back))
end
local entries = {}
if #mine > 0 then
  entries = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(mine))
end
return {r[1], entries, r[3] or {}}
