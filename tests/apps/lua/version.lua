-- Which runtime runs this script: _VERSION, and LuaJIT's jit.version when present.
return { accept = function()
  return "Status: 200 OK\r\n\r\n" .. _VERSION .. (jit and (" " .. jit.version) or "")
end }
