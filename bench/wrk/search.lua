-- POST /search by scene id (k = GRN_K, default 10), the ids drawn in turn from GRN_SCENE_IDS
-- (comma-separated). Used by bench/workers.py; any non-2xx answer shows in wrk's summary.
local ids = {}
for id in string.gmatch(os.getenv("GRN_SCENE_IDS") or "", "[^,]+") do ids[#ids + 1] = id end
local k = os.getenv("GRN_K") or "10"
local n = 0

request = function()
  n = n + 1
  local body = '{"scene_id": ' .. ids[(n % #ids) + 1] .. ', "k": ' .. k .. '}'
  return wrk.format("POST", "/search", {["Content-Type"] = "application/json"}, body)
end
