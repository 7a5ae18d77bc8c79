/* webui: the web UI page (coordinator/webui/index.html) as bytes in the binary, made at build
 * time by cmake/embed.cmake (the generated webui_index.c lives in the build folder; the HTML file
 * is the only copy in git). server_info.c serves it at GET /. */
#ifndef TERN_WEBUI_H
#define TERN_WEBUI_H
#include <stddef.h>

extern const unsigned char webui_index_html[];   /* (webui_index_html_len + 1,) NUL past the end */
extern const size_t webui_index_html_len;
extern const char webui_index_html_etag[];       /* "\"<16 hex digits of its SHA-256>\"" */

#endif
