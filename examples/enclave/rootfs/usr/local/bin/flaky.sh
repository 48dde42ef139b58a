#!/bin/sh
count=$(cat /run/flaky.count 2>/dev/null || echo 0)
count=$((count + 1))
echo $count > /run/flaky.count
if [ "$count" -le 2 ]; then
    echo "run $count: crashing on purpose"
    exit 1
fi
echo "run $count: up for good"
exec sleep 100000
