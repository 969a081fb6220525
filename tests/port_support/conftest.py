# The two applications under this folder have test suites of their own, which
# tests/test_port.py runs in a copy of each application's folder: the main
# suite must not collect them.
collect_ignore = ["before", "after"]
