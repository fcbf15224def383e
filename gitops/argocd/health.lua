-- Argo CD health of a serving.vss.ai/VSSModel, read from the status the vss-operator writes.
--   Healthy      phase Stable, Ready=True, status written for the current generation
--   Suspended    a Manual rollout that passed every step waits for serving.vss.ai/promote
--   Progressing  a rollout in flight, a promotion finishing, or the operator not caught up yet
--   Degraded     a rolled-back rollout, Stalled=True, or phase Failed
-- Lua 5.1 as Argo CD embeds it (gopher-lua): no goto, no integer division, no os/io.
local hs = { status = "Progressing", message = "Waiting for the vss-operator to report status" }

if obj.status == nil then
  return hs
end
local status = obj.status

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the vss-operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type ~= nil then
      conditions[condition.type] = condition
    end
  end
end

local function text(value, fallback)
  if value ~= nil and value ~= "" then
    return tostring(value)
  end
  return fallback
end

local rollout = status.rollout or {}
local stable = text(status.stableVersion, "?")
local canary = text(status.canaryVersion, "?")
local stalled = conditions["Stalled"]
local ready = conditions["Ready"]

if status.phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = text(rollout.message, "Rolled back " .. canary .. "; " .. stable .. " serves all traffic")
  return hs
end
if status.phase == "Failed" or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
  if stalled ~= nil then
    hs.message = text(stalled.message, text(stalled.reason, "Stalled"))
  elseif ready ~= nil then
    hs.message = text(ready.message, "Failed")
  else
    hs.message = "Failed"
  end
  return hs
end
if status.phase == "Progressing" then
  if rollout.stage == "AwaitingPromotion" then
    hs.status = "Suspended"
    hs.message = text(rollout.message, canary .. " passed every step: waiting for serving.vss.ai/promote: " .. canary)
    return hs
  end
  hs.status = "Progressing"
  local weight = status.canaryWeight or 0
  hs.message = "Rolling out " .. canary .. " (" .. tostring(weight) .. "% of traffic, stable " .. stable .. ")"
  if rollout.message ~= nil and rollout.message ~= "" then
    hs.message = hs.message .. ": " .. rollout.message
  end
  return hs
end
if status.phase == "Promoted" then
  hs.status = "Progressing"
  hs.message = text(rollout.message, stable .. " promoted; finishing")
  return hs
end
if status.phase == "Stable" and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = stable .. " serves all traffic"
  return hs
end
if ready ~= nil then
  hs.message = text(ready.message, text(ready.reason, "Not ready"))
end
return hs
