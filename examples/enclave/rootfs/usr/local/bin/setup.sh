#!/bin/sh
echo "preparing /run/app (greeting from /env: $GREETING)"
mkdir -p /run/app
echo "secret-from-setup" > /run/app/config
echo "setup done"
