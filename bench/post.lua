-- wrk script: POST the body in $BODY_FILE with the content type in $CONTENT_TYPE.
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*all")
f:close()
