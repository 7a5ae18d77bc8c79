/* json_schema: a JSON Schema → a GBNF grammar (grammar.h) whose sentences are exactly the JSON
 * texts (in tern's layout: properties in the schema's order, bounded whitespace) that the schema
 * accepts — OpenAI's response_format {"type": "json_schema"} and llama.cpp's json_schema field.
 * Supported: type (one or a list), properties / required / additionalProperties, items /
 * prefixItems / minItems / maxItems, enum, const, anyOf / oneOf, allOf of objects, $ref to
 * #/$defs/... or #/definitions/..., string minLength / maxLength, integer / number. A keyword
 * that would constrain the text but is not supported (pattern, minimum, ...) is refused with its
 * path, never silently dropped; annotations (title, description, default, examples, format) are
 * ignored. Not here: matching (grammar.c). */
#ifndef TERN_JSON_SCHEMA_H
#define TERN_JSON_SCHEMA_H
#include <stddef.h>

/* schema: the schema as JSON text (len bytes). Returns a malloc'd NUL-terminated GBNF text with
 * start rule "root" (the caller frees), or NULL with a one-line reason naming the JSON pointer of
 * the offending part (e.g. "#/properties/age: 'minimum' is not supported"). */
char *json_schema_to_gbnf(const char *schema, size_t len, char *err, size_t errlen);

#endif
