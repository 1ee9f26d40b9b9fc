def body():
    return b"from a package file"
