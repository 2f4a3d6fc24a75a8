"""The build's inputs from disk: .dockerignore rules, source trees seen through a persistent stat
cache (the build context, another stage's filesystem), and the content hashes that key COPY/ADD and
bind mounts."""
