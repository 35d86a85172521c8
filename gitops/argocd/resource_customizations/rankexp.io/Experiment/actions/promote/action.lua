-- Approve the winner the analysis proposed: spec.promotion.approvedVariant, exactly what
-- `rankexp promote NAME VARIANT` sets. The operator promotes it at its next tick; it never
-- writes spec itself. Argo CD's diff leaves the field alone unless Git sets it too.
if obj.spec.promotion == nil then
  obj.spec.promotion = {}
end
obj.spec.promotion.approvedVariant = obj.status.analysis.winner
return obj
