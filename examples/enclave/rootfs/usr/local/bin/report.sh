#!/bin/sh
sleep 2
echo "--- what init sees ---"
initctl list
echo "--- app status ---"
initctl status app
echo "report done: powering off"
