"""What every backend checks on the host, outside the sandbox, after a command ran.

scan.py     the checks after a command with read-write folders (setid, planted git)
setid.py    setuid and setgid files stripped from read-write folders
gitplant.py git repositories made where git is protected, renamed aside
walk.py     the one bounded, symlink-blind walk both scans use
"""
