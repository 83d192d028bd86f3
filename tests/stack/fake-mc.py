#!/opt/moto/bin/python
"""TEST ONLY: the `mc` (MinIO client) commands docker-compose.yml runs, for any S3 server.

    mc ready local                      exit 0 once the server in this container answers
    mc alias set NAME URL KEY SECRET    remember an endpoint
    mc mb [--ignore-existing] NAME/BUCKET

so compose.test.yml only swaps images: podman-compose 1.0.3 concatenates (not replaces) a
service's command, entrypoint and healthcheck test across -f files.
"""
import json
import os
import sys
import urllib.request

CONF = os.path.join(os.environ.get("MC_CONFIG_DIR", "/tmp/.mc"), "aliases.json")


def aliases() -> dict:
    try:
        with open(CONF) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"local": {"url": "http://127.0.0.1:9000", "key": "x", "secret": "x"}}


def main(argv: list[str]) -> int:
    if argv[:1] == ["ready"]:
        url = aliases()[argv[1] if len(argv) > 1 else "local"]["url"]
        urllib.request.urlopen(url + "/", timeout=4)
        return 0
    if argv[:2] == ["alias", "set"]:
        name, url, key, secret = argv[2:6]
        conf = aliases()
        conf[name] = {"url": url.rstrip("/"), "key": key, "secret": secret}
        os.makedirs(os.path.dirname(CONF), exist_ok=True)
        with open(CONF, "w") as f:
            json.dump(conf, f)
        print(f"Added `{name}` successfully.")
        return 0
    if argv[:1] == ["mb"]:
        import boto3

        target = [a for a in argv[1:] if not a.startswith("-")][0]
        name, bucket = target.split("/", 1)
        a = aliases()[name]
        s3 = boto3.client("s3", endpoint_url=a["url"], aws_access_key_id=a["key"],
                          aws_secret_access_key=a["secret"],
                          region_name=os.environ.get("RATATOUILLE_S3_REGION", "us-east-1"))
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if bucket in existing:
            if "--ignore-existing" in argv or "-p" in argv:
                print(f"Bucket `{target}` already exists.")
                return 0
            print(f"mc: <ERROR> Unable to make bucket `{target}`. Your previous request to create the "
                  "named bucket succeeded and you already own it.", file=sys.stderr)
            return 1
        s3.create_bucket(Bucket=bucket)
        print(f"Bucket created successfully `{target}`.")
        return 0
    print(f"mc (test stand-in): unsupported: {' '.join(argv)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
