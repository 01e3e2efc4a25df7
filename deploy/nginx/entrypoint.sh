#!/bin/sh
# What the official image's 20-envsubst-on-templates.sh does: each template, with only the
# environment's variables substituted (nginx's own $variables stay), into conf.d.
set -eu
mkdir -p /etc/nginx/conf.d
for template in /etc/nginx/templates/*.template; do
    [ -e "$template" ] || continue
    name=$(basename "$template" .template)
    vars=$(env | cut -d= -f1 | sed 's/^/$/' | tr '\n' ' ')
    envsubst "$vars" < "$template" > "/etc/nginx/conf.d/$name"
done
exec nginx -g 'daemon off;'
