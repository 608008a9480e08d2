-- Appends a chunk of entries to one stream in one step, as MULTI/EXEC of
-- XADDs would, but needing only what a least-privilege user is granted
-- (stream commands and scripts, no MULTI). Called by
-- `producer/chunk.rs` (`AppendChunk`), the one append path of the library
-- and the CLI.
--
-- KEYS[1]  the stream
-- ARGV[1]  the cap: 'MAXLEN' or 'MINID' (applied with '~'), or '' for none
-- ARGV[2]  the cap's threshold (ignored without a cap)
-- ARGV[3..] per entry: its ID ('*': the server picks), its number of
--          fields n, then n field, value pairs
--
-- Returns one reply per entry: its new ID, or the error XADD gave for it;
-- as in EXEC, an entry refused (WRONGTYPE, OOM, an ID too small) does not
-- stop the others. A script runs alone, so the chunk is never interleaved
-- with another client's writes.
local out = {}
local i = 3
while i <= #ARGV do
  local args = {KEYS[1]}
  if ARGV[1] ~= '' then
    args[#args + 1] = ARGV[1]
    args[#args + 1] = '~'
    args[#args + 1] = ARGV[2]
  end
  args[#args + 1] = ARGV[i]
  local n = tonumber(ARGV[i + 1]) or 0
  for j = 0, 2 * n - 1 do
    args[#args + 1] = ARGV[i + 2 + j]
  end
  out[#out + 1] = redis.pcall('XADD', unpack(args))
  i = i + 2 + 2 * n
end
return out
