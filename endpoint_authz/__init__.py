"""The endpoint's Docker authorization plugin (stdlib only; runs on the hosts).

`rules` is the policy as a pure function (an AuthZ request in, a decision
out); `plugin` serves it to dockerd over a unix socket and is the operator
command (drain, resume, status).
"""
