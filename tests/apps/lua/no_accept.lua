return { start = function() return 0 end }
