-- Argo CD resource actions for keymint.dev/RootKey (see docs/argocd.md).
-- "rotate" is always offered: it only asks keymint for a new key.
local actions = {}
actions["rotate"] = {
  ["disabled"] = false,
  ["iconClass"] = "fa fa-fw fa-redo",
  ["displayName"] = "Rotate key"
}
return actions
