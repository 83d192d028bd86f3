#!/bin/sh
# TEST ONLY: take MinIO's command line (`server /data --console-address :9001`) and run moto's
# S3 server on MinIO's port instead; any other command runs as given (e.g. the bucket init's sh -c).
if [ "${1:-}" = server ] || [ $# -eq 0 ]; then
    exec moto_server -H 0.0.0.0 -p 9000
fi
exec "$@"
