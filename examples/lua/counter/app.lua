-- A small stateful app in the accept style:
--   * a request counter that lives as long as the worker process;
--   * pages rendered from files in pages/, read once and cached;
--   * restart() (SIGHUP) empties the cache, so edited pages show without a restart;
--   * start() reads the configuration; stop() says goodbye in the error log.
--
--   fcgibridge examples/lua/counter/app.lua -b 127.0.0.1:9000
local render = require("render")   -- render.lua, next to this script

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local requests = 0
local site_name = "counter"
local cache = {}

local function page(name)
  local text = cache[name]
  if not text then
    local f = io.open(here .. "/pages/" .. name .. ".html")
    if not f then return nil end
    text = f:read("*a")
    f:close()
    cache[name] = text
  end
  return text
end

local function start()
  site_name = os.getenv("SITE_NAME") or site_name
  print("counter: starting as " .. site_name)
  return 0
end

local function restart()
  cache = {}
  print("counter: page cache cleared")
end

local function stop()
  print("counter: stopping after " .. requests .. " requests")
  return 0
end

local function accept()
  requests = requests + 1
  local path = os.getenv("PATH_INFO") or "/"
  local name = path:match("^/(%w+)$") or (path == "/" and "index") or nil
  local template = name and page(name)
  if not template then
    return "Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno page " .. path .. "\n"
  end
  local html = render.fill(template, {
    site = site_name, count = tostring(requests), method = os.getenv("REQUEST_METHOD") or "GET",
  })
  return "Status: 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" .. html
end

return { accept = accept, start = start, restart = restart, stop = stop }
