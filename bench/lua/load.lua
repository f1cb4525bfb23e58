-- wrk script for `make bench`. Arguments after `--`:
--   mode    mix (random user among USERS), unique (a new user per request), get (plain GET)
--   path    request path
--   key     X-API-KEY value ("-" for none)
--   users   size of the user population (mix)
--   limit   responses after which each thread stops (0: run for the -d duration)
--   prefix  user id prefix, unique per run
-- Prints one JSON line in done(): counts per status, wrk's summary and latency percentiles (µs).
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  mode, path, key, users, limit, prefix = args[1], args[2], args[3], tonumber(args[4]), tonumber(args[5]), args[6]
  math.randomseed(os.time() * 1000 + id)
  if key ~= "-" then wrk.headers["X-API-KEY"] = key end
  if mode ~= "get" then
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
  end
  sent, received = 0, 0
  s2xx, s409, s410, s403, s401, s5xx, sother = 0, 0, 0, 0, 0, 0, 0
end

function request()
  sent = sent + 1
  if mode == "get" then return wrk.format("GET", path) end
  local user
  if mode == "unique" then user = prefix .. "-" .. id .. "-" .. sent else user = prefix .. math.random(users) end
  return wrk.format(nil, path, nil, '{"userId":"' .. user .. '"}')
end

function response(status)
  received = received + 1
  if status >= 200 and status < 300 then s2xx = s2xx + 1
  elseif status == 409 then s409 = s409 + 1
  elseif status == 410 then s410 = s410 + 1
  elseif status == 403 then s403 = s403 + 1
  elseif status == 401 then s401 = s401 + 1
  elseif status >= 500 then s5xx = s5xx + 1
  else sother = sother + 1 end
  if limit > 0 and received >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local counts = {}
  for _, name in ipairs({"s2xx", "s409", "s410", "s403", "s401", "s5xx", "sother"}) do
    local total = 0
    for _, t in ipairs(threads) do total = total + (t:get(name) or 0) end
    table.insert(counts, string.format('"%s":%d', name, total))
  end
  local ps = {}
  for _, p in ipairs({1, 5, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99}) do
    table.insert(ps, string.format("[%g,%d]", p, latency:percentile(p)))
  end
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors":%d,"counts":{%s},"max_us":%d,"mean_us":%.1f,"percentiles":[%s]}\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(counts, ","), latency.max, latency.mean, table.concat(ps, ",")))
end
