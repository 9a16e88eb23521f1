#!/bin/sh
# The example project's "test suite": it checks that the build log says the build passed.
grep -q "build passed" "$(dirname "$0")/build.log" && echo "ok: the build passed"
