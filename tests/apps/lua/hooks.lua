-- An accept-style Lua script for the tests: every hook, and a path per failure mode.
-- Hooks note their calls in $HOOK_LOG; start returns $START_CODE ("raise" errors);
-- stop returns the number in the file $STOP_CODE_FILE (0 without it).
local helper = require("helper")

local count, generation = 0, 0

local function note(what)
  local log = os.getenv("HOOK_LOG")
  if log then
    local f = io.open(log, "a")
    f:write(helper.pid() .. " " .. what .. "\n")
    f:close()
  end
end

local function start()
  note("start")
  local code = os.getenv("START_CODE") or "0"
  if code == "raise" then error("start failed on purpose") end
  return tonumber(code)
end

local function restart()
  generation = generation + 1
  note("restart")
end

local function stop()
  local path = os.getenv("STOP_CODE_FILE")
  local code = 0
  local f = path and io.open(path)
  if f then code = tonumber(f:read("*a")); f:close() end
  note("stop " .. code)
  return code
end

local function accept()
  count = count + 1
  local path = os.getenv("PATH_INFO") or os.getenv("SCRIPT_NAME") or "/"
  local query = os.getenv("QUERY_STRING") or ""
  if path == "/print" then
    print("a line printed by accept", 42)
  elseif path == "/slow" then
    helper.sleep(tonumber(query:match("^[%d.]+")) or 1)
  elseif path == "/bad-type" then
    return 42
  elseif path == "/no-separator" then
    return "Content-Type: text/plain"
  elseif path == "/bad-status" then
    return "Status: abc\r\n\r\nbody"
  elseif path == "/raise" then
    error("accept failed on purpose")
  elseif path == "/body" then
    return "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n" .. (io.read("*a") or "")
  elseif path == "/redirect" then
    return "Location: /elsewhere\n\n"
  elseif path == "/env" then
    local out = {}
    for name in string.gmatch(query, "[^,]+") do out[#out + 1] = name .. "=" .. tostring(os.getenv(name)) end
    return "Status: 200 OK\r\n\r\n" .. table.concat(out, "\n")
  elseif path == "/args" then
    return "Status: 200 OK\r\n\r\n" .. table.concat(arg, ",", 1)
  end
  return "Status: 200 OK\r\nContent-Type: text/plain\r\nX-Pid: " .. helper.pid() .. "\r\n\r\n"
    .. "uri=" .. tostring(os.getenv("REQUEST_URI")) .. " count=" .. count .. " generation=" .. generation
end

return { accept = accept, start = start, restart = restart, stop = stop }
