error("the script failed while loading")
