-- Argo CD action "rotate" for keymint.dev/RootKey (see docs/argocd.md).
-- Sets the keymint.dev/rotate-request annotation to a new value (the current
-- UTC time); keymint rotates the key once and records the value in
-- status.lastRotateRequest. A suffix keeps the value new when the action runs
-- twice within one second. Nothing else in the object is changed.
local os = require("os")
local annotation = "keymint.dev/rotate-request"
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local previous = obj.metadata.annotations[annotation]
local handled = nil
if obj.status ~= nil then
  handled = obj.status.lastRotateRequest
end
local now = os.date("!%Y-%m-%dT%H:%M:%SZ")
local value = now
local attempt = 1
while value == previous or value == handled do
  attempt = attempt + 1
  value = now .. "-" .. attempt
end
obj.metadata.annotations[annotation] = value
return obj
