local function accept()
  return "Status: 200 OK\r\n\r\n" ..
end
return { accept = accept }
