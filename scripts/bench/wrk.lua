-- Drives one endpoint for `manage.py bench`. BENCH_SECRETS is a file of agents, a line
-- each: "<secret> <version>". Each request carries the next agent's secret, so the load
-- spreads over the fleet, and "{version}" in BENCH_BODY becomes that agent's version.
-- BENCH_METHOD and BENCH_BODY set the request; done() prints one JSON line.
local secrets, versions = {}, {}
local file = os.getenv("BENCH_SECRETS")
if file and file ~= "" then
  for line in io.lines(file) do
    local secret, version = line:match("^(%S+) (%S+)$")
    secrets[#secrets + 1] = secret
    versions[#versions + 1] = version
  end
end
local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
local next_agent = 0

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  if #secrets > 0 then next_agent = math.random(#secrets) end
end

function request()
  local headers = {["Content-Type"] = "application/json"}
  if #secrets > 0 then
    next_agent = next_agent % #secrets + 1
    headers["Authorization"] = "Bearer " .. secrets[next_agent]
    if body then
      return wrk.format(method, nil, headers, (body:gsub("{version}", versions[next_agent])))
    end
  end
  return wrk.format(method, nil, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
