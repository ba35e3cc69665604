-- wrk script for bench/tiles.py: cycle through a fixed list of tile paths.
-- WRK_PATHS: a file with one request path per line; WRK_TOKEN: a bearer token (optional).
local paths, i = {}, 0
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
local headers = {["Accept-Encoding"] = "identity"}
local token = os.getenv("WRK_TOKEN")
if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end

request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], headers)
end

-- No response() callback: defining one makes wrk hand every response to Lua, which costs
-- the client more than the cached server spends per tile.
done = function(summary, latency, requests)
  io.write(string.format("STATUS errors=%d timeouts=%d\n", summary.errors.status, summary.errors.timeout))
end
