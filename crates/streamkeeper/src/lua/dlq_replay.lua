-- Gives one dead letter back to the group that gave up on it, atomically.
--
-- KEYS[1]  the dead-letter stream {S}:dlq
-- KEYS[2]  the stream S
-- KEYS[3]  the group's retry set {S}:retry:<group>
-- KEYS[4]  the attempt marks {S}:attempts
-- ARGV[1]  the dead letter's ID
-- ARGV[2]  its group (sk-group), as the caller read it ('' when none)
-- ARGV[3]  its first ID (sk-origin-id), as the caller read it ('' when none)
-- ARGV[4]  the ID just below that one
-- ARGV[5]  now, in ms
-- ARGV[6]  the reserved consumer that holds parked entries (sk-retry)
--
-- When the original entry is still in S and not pending in the group, it
-- is put back into the group's pending list under its own ID, parked for
-- a retry due now (XGROUP SETID just below it, XREADGROUP COUNT 1 as
-- sk-retry, SETID back with the group's ENTRIESREAD): no other group of
-- S sees anything. When the group has not reached it yet (a reset moved
-- it back) or holds it pending already, the dead letter just goes:
-- 'in-group'.
-- Otherwise (the original was trimmed) the entry is appended anew with
-- sk-origin-id and sk-retry-group, so only that group processes it again
-- (other streamkeeper groups skip it; plain clients do see it).
-- The attempt count starts afresh.
-- Returns {how, id}: 'parked' or 'in-group' with the original ID, or
-- 'appended' with the new one; false when there is no such dead letter.
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local f = found[1][2]
local args = {KEYS[2], '*'}
local group = nil
local origin = nil
for i = 1, #f, 2 do
  local k = f[i]
  if k == 'sk-group' then
    group = f[i + 1]
  elseif k == 'sk-origin-id' then
    origin = f[i + 1]
  elseif k ~= 'sk-origin' and k ~= 'sk-deliveries' and k ~= 'sk-reason' and k ~= 'sk-dead-at'
      and k ~= 'sk-retry-group' and k ~= 'sk-attempt' then
    args[#args + 1] = k
    args[#args + 1] = f[i + 1]
  end
end
if group and origin and group == ARGV[2] and origin == ARGV[3] then
  local info = nil
  local groups = redis.pcall('XINFO', 'GROUPS', KEYS[2])
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local m = {}
      for i = 1, #g, 2 do m[g[i]] = g[i + 1] end
      if m['name'] == group then info = m end
    end
  end
  local still = #redis.call('XRANGE', KEYS[2], origin, origin) == 1
  if info and still then
    -- pcall: a least-privilege user (stream commands only) may not touch
    -- the hash or the sorted set; the entry is then reclaimed after
    -- claim_after instead of taken when due.
    redis.pcall('HDEL', KEYS[4], group .. '\0' .. origin)
    local pending = redis.call('XPENDING', KEYS[2], group, origin, origin, 1)
    local last = info['last-delivered-id']
    -- Has the group read past it? Its last-delivered ID sorts at or
    -- after the original: XRANGE last..origin holds the original only
    -- when last <= origin.
    local behind = #redis.call('XRANGE', KEYS[2], last, origin, 'COUNT', 1) > 0
      and last ~= origin
    if behind or #pending > 0 then
      -- The group reads it again anyway, or holds it already.
      redis.call('XDEL', KEYS[1], ARGV[1])
      return {'in-group', origin}
    end
    do
      redis.call('XGROUP', 'SETID', KEYS[2], group, ARGV[4])
      redis.call('XREADGROUP', 'GROUP', group, ARGV[6], 'COUNT', 1, 'STREAMS', KEYS[2], '>')
      if info['entries-read'] then
        redis.call('XGROUP', 'SETID', KEYS[2], group, last, 'ENTRIESREAD', info['entries-read'])
      else
        redis.call('XGROUP', 'SETID', KEYS[2], group, last)
      end
      redis.pcall('ZADD', KEYS[3], ARGV[5], origin)
      redis.call('XDEL', KEYS[1], ARGV[1])
      return {'parked', origin}
    end
  end
end
if origin then
  args[#args + 1] = 'sk-origin-id'
  args[#args + 1] = origin
end
if group then
  args[#args + 1] = 'sk-retry-group'
  args[#args + 1] = group
end
local id = redis.call('XADD', unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return {'appended', id}
