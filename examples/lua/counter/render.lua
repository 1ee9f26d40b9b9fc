-- {{name}} placeholders, filled from a table (HTML-escaped).
local M = {}

local escapes = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }

function M.escape(text)
  return (tostring(text):gsub('[&<>"]', escapes))
end

function M.fill(template, values)
  return (template:gsub("{{(%w+)}}", function(key) return M.escape(values[key] or "") end))
end

return M
