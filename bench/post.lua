-- wrk script: POST the body in $BODY_FILE with the content type in $CONTENT_TYPE; for the Open
-- Inference Protocol's binary extension, $INFER_HEADER_LENGTH is the JSON header's length.
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
local header_length = os.getenv("INFER_HEADER_LENGTH")
if header_length and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*all")
f:close()
