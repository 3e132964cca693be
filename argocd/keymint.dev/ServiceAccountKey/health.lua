-- Argo CD health check for keymint.dev/ServiceAccountKey (see docs/argocd.md).
-- Healthy: Ready=True for the current generation. Progressing: no key issued
-- yet, or keymint has not yet observed the latest spec (a just-edited key is
-- never Healthy on the previous generation's status). Degraded: Ready=False,
-- with the condition's message (SecretConflict,
-- ServiceAccountNotFound, InvalidSpec).
-- Runs without Lua's string/math libraries, as Argo CD runs custom checks.
local hs = {}
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for keymint to issue the ServiceAccountKey"
  return hs
end

local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for keymint to observe generation " .. generation
  if observed ~= nil then
    hs.message = hs.message .. " (status is for generation " .. observed .. ")"
  end
  return hs
end

local ready = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for keymint to issue the ServiceAccountKey"
  return hs
end

local message = ready.message
if message == nil or message == "" then
  message = ready.reason
end
if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = message
return hs
