# The API: answers /status with a greeting (from the service's environment).
mkdir -p /srv/api/www
echo "${GREETING:-hello} from the api" > /srv/api/www/status
exec httpd -f -p 8000 -h /srv/api/www
