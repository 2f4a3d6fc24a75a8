# The worker: asks the API (by its service name) for its status, once.
wget -q -O- http://api:8000/status
