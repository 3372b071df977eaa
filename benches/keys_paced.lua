-- keys.lua's requests, each sent after a pause: arguments after `--` are
-- prefix n pace_ms. Each connection waits pace_ms before each request, so
-- the offered load is bounded and the same for every server (latency is
-- compared at equal load). A separate script because wrk times every
-- request through its event loop as soon as a script defines `delay`.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "keys.lua")

local keys_init = init
local pace

function init(args)
  keys_init(args)
  pace = tonumber(args[3])
end

function delay()
  return pace
end
