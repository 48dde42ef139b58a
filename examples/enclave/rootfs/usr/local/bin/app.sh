#!/bin/sh
config=$(cat /run/app/config)
echo "app starting in $APP_MODE mode with config '$config'"
sleep 1
initctl notify --ready --status "serving requests"
i=0
while true; do
    i=$((i + 1))
    echo "handled request $i"
    sleep 1
done
