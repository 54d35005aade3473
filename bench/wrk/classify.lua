-- POST /classify with one image (GRN_IMAGE), multipart. Each request carries its send time
-- (CLOCK_MONOTONIC, microseconds) as X-Request-ID, which the service echoes; response() turns
-- it into a latency and appends "status latency_ms" to GRN_LATENCIES. With GRN_RETRY_AFTER=1
-- each 503 delays one next request of the same wrk thread by its Retry-After (wrk's delay() is
-- not told the connection, so it is the next request sent, not always the same connection's).
-- Used by bench/overload.py.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } timespec;
int clock_gettime(int clk_id, timespec *tp);
]]
local ts = ffi.new("timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end
local f = assert(io.open(os.getenv("GRN_IMAGE"), "rb")); local data = f:read("*all"); f:close()
local b = "grnbenchboundary"
local body = "--" .. b .. "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
  .. "Content-Type: application/octet-stream\r\n\r\n" .. data .. "\r\n--" .. b .. "--\r\n"
local out = nil
local lines = 0
local honour = os.getenv("GRN_RETRY_AFTER") == "1"
local backoff = {}

request = function()
  local headers = {}
  headers["Content-Type"] = "multipart/form-data; boundary=" .. b
  headers["X-Request-ID"] = tostring(now_us())
  return wrk.format("POST", "/classify", headers, body)
end

response = function(status, headers, body)
  if out == nil and os.getenv("GRN_LATENCIES") then out = io.open(os.getenv("GRN_LATENCIES"), "a") end
  local sent = tonumber(headers["x-request-id"] or headers["X-Request-ID"] or "")
  if out and sent then
    out:write(status, " ", (now_us() - sent) / 1000, "\n")
    lines = lines + 1
    if lines % 50 == 0 then out:flush() end
  end
  if honour and status == 503 then
    backoff[#backoff + 1] = 1000 * (tonumber(headers["retry-after"] or headers["Retry-After"]) or 1)
  end
end

if honour then
  delay = function()
    return table.remove(backoff, 1) or 0
  end
end
