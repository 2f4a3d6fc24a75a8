#!/bin/sh
cat /data/greeting.txt
echo "running as $(id -u) in $(pwd)"
