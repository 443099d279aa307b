//! What the demo sends: its responses, the session page, and the bytes of both.

use std::io::Write;

pub(crate) struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    chunked: bool,
}

/// What the request decides about the bytes of its response.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    /// `Connection: close` goes with it.
    pub(crate) close: bool,
    /// A HEAD: the head alone.
    pub(crate) head_only: bool,
    /// The client reads chunked bodies.
    pub(crate) http11: bool,
}

impl Response {
    pub(crate) fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            body,
            chunked: false,
        }
    }

    pub(crate) fn page(body: String) -> Response {
        Response {
            status: 200,
            content_type: "text/html; charset=UTF-8",
            body,
            chunked: true,
        }
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>, prefix: &str, shape: Shape) {
        let Shape {
            close,
            head_only,
            http11,
        } = shape;
        let chunked = self.chunked && http11;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nCache-Control: no-cache, no-store, must-revalidate\r\n\
             X-Backend: {prefix}\r\n",
            self.status,
            reason(self.status),
            self.content_type
        );
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        if chunked {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        } else {
            let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        }
        if head_only {
            return;
        }
        let body = self.body.as_bytes();
        if chunked {
            // Two chunks (split at a char boundary) and the last-chunk, as a dynamic Wt page would.
            let mut mid = body.len() / 2;
            while !self.body.is_char_boundary(mid) {
                mid -= 1;
            }
            for part in [&body[..mid], &body[mid..]] {
                if !part.is_empty() {
                    let _ = write!(out, "{:x}\r\n", part.len());
                    out.extend_from_slice(part);
                    out.extend_from_slice(b"\r\n");
                }
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend_from_slice(body);
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

pub(crate) fn error_response(
    status: u16,
    msg: &str,
    prefix: &str,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let body = if msg.is_empty() {
        String::new()
    } else {
        format!("{msg}\n")
    };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         X-Backend: {prefix}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The session page: a heading, links, and a WebSocket echo check (the id travels in `data-wtd`).
pub(crate) fn page(prefix: &str, id: &str, heading: &str) -> String {
    let (prefix, id, heading) = (html_escape(prefix), html_escape(id), html_escape(heading));
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>wtgate demo: {prefix}</title></head>
<body data-wtd="{id}">
<h1>{heading}</h1>
<p><a href="?wtd={id}">continue this session</a> &middot; <a href="?">new session</a></p>
<p>WebSocket: <span id="ws">connecting&hellip;</span></p>
<script>
(function () {{
  var out = document.getElementById('ws');
  try {{
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + location.pathname +
      '?wtd=' + encodeURIComponent(document.body.dataset.wtd) + '&request=ws';
    var ws = new WebSocket(url);
    ws.onopen = function () {{ ws.send('hello at ' + new Date().toISOString()); }};
    ws.onmessage = function (e) {{ out.textContent = 'echo: ' + e.data; ws.close(1000); }};
    ws.onerror = function () {{ out.textContent = 'failed'; }};
  }} catch (e) {{ out.textContent = 'error: ' + e; }}
}})();
</script>
</body></html>
"#
    )
}
