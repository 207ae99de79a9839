# The access decision of ADR 0005 in Rego, for the bench's Open Policy Agent peer.
# Same JWKS, same checks: signature under the realm's JWKS (io.jwt.decode_verify, RS256 only),
# iss exact, aud contains the client, exp/nbf at now (decode_verify), azp, typ Bearer,
# acr, amr ⊇ {sc, otp}, the realm role, a municipality group, auth_time within 8 h, and every
# required course current in the training data document.
#
# data: {"jwks": "<JWKS JSON string>", "config": {...}, "training": {"required": [...],
#        "users": {"<username>": {"<course>": "<RFC 3339 valid-until>"}}}}
# query: POST /v1/data/skydd/authz/allow  {"input": {"token": "<compact JWS>"}}
package skydd.authz

import rego.v1

default allow := false

now := time.now_ns()

verified := [valid, claims] if {
	[valid, _, claims] := io.jwt.decode_verify(input.token, {
		"cert": data.jwks,
		"iss": data.config.issuer,
		"aud": data.config.client_id,
		"alg": "RS256",
		"time": now,
	})
}

claims := verified[1] if verified[0]

user := claims.preferred_username

allow if {
	claims.azp == data.config.client_id
	claims.typ == "Bearer"
	claims.acr == data.config.required_acr
	every factor in data.config.required_amr {
		factor in claims.amr
	}
	data.config.required_role in claims.realm_access.roles
	some group in claims.groups
	trim_prefix(group, "/") in data.config.municipality_groups
	is_number(claims.auth_time)
	claims.auth_time * 1000000000 <= now + (data.config.leeway_seconds * 1000000000)
	now - (claims.auth_time * 1000000000) <= data.config.max_auth_age_seconds * 1000000000
	trained
}

trained if {
	record := data.training.users[user]
	every course in data.training.required {
		time.parse_rfc3339_ns(record[course]) > now
	}
}
