-- wrk request generator: GET <prefix>k<i>.bin for i drawn uniformly from
-- [0, n). Arguments after `--`: prefix n.
local prefix, n

function init(args)
  prefix = args[1]
  n = tonumber(args[2])
  math.randomseed(os.time() + (wrk.thread and 0 or 0))
end

function request()
  return wrk.format("GET", prefix .. "k" .. math.random(0, n - 1) .. ".bin")
end
