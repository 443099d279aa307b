//! Request heads captured from real browser sessions with Wt 4.14.0 (docs/wt-traffic.txt, §A).

pub(super) const WT_GET: &[u8] = b"GET /?wtd=wt13kcFKBb8y0I2SsdS&sid=464786151&webGL=true&scrW=900&scrH=500&tz=0&tzS=UTC&notif=default&pcs=light&anchor=true&viS=visible&htmlHistory=true&deployPath=%2F&request=script&rand=4260724486 HTTP/1.1\r\n\
Host: 127.0.0.1:9090\r\n\
Connection: keep-alive\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36\r\n\
sec-ch-ua: \"Not:A-Brand\";v=\"8\", \"Chromium\";v=\"156\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
Accept: */*\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Sec-Fetch-Dest: script\r\n\
Referer: http://127.0.0.1:9090/\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: WtTestCookie=ok\r\n\r\n";

pub(super) const WT_POST: &[u8] = b"POST /?wtd=wt13kcFKBb8y0I2SsdS HTTP/1.1\r\n\
Host: 127.0.0.1:9090\r\n\
Connection: keep-alive\r\n\
Content-Length: 274\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36\r\n\
sec-ch-ua: \"Not:A-Brand\";v=\"8\", \"Chromium\";v=\"156\"\r\n\
Content-type: application/x-www-form-urlencoded\r\n\
sec-ch-ua-mobile: ?0\r\n\
Accept: */*\r\n\
Origin: http://127.0.0.1:9090\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: cors\r\n\
Sec-Fetch-Dest: empty\r\n\
Referer: http://127.0.0.1:9090/\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: WtTestCookie=ok\r\n\r\n\
request=jsupdate&ackId=464786152&pageId=1";

pub(super) const WT_WS: &[u8] = b"GET /?wtd=wt13kcFKBb8y0I2SsdS&request=ws HTTP/1.1\r\n\
Host: 127.0.0.1:9090\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://127.0.0.1:9090\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: WtTestCookie=ok\r\n\
Sec-WebSocket-Key: QCUVFQhbuTMi1xe8BM4rpQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
