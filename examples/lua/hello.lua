-- The smallest accept-style Lua script: fcgibridge examples/lua/hello.lua
local function accept()
  local name = (os.getenv("QUERY_STRING") or ""):match("name=([%w_-]+)") or "world"
  return "Status: 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    .. "<h1>Hello, " .. name .. "!</h1>\n"
end

return { accept = accept }
