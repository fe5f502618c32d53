#!/usr/bin/env python3
"""Re-verify every vector file in this folder with independent implementations.

Not used by `cargo test`; run by hand:  python3 crosscheck.py
Needs: python `cryptography` (>= 42, with SM3/SM4), the `openssl` 3.x CLI (SM2/SM3/SM4),
and optionally `gmssl-pyx` (GmSSL bindings; skipped when not installed).
Exits non-zero on the first mismatch (assert).
"""
import json, os, sys, subprocess, tempfile
try:
    import gmssl_pyx
except ImportError:
    gmssl_pyx = None

# ---- SM2 curve helpers, DER helpers, openssl wrappers
p=int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF",16)
a=int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC",16)
b=int("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93",16)
n=int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123",16)
Gx=int("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7",16)
Gy=int("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0",16)
def add(P,Q):
    if P is None: return Q
    if Q is None: return P
    if P[0]==Q[0] and (P[1]+Q[1])%p==0: return None
    if P==Q: l=(3*P[0]*P[0]+a)*pow(2*P[1],-1,p)%p
    else: l=(Q[1]-P[1])*pow(Q[0]-P[0],-1,p)%p
    x=(l*l-P[0]-Q[0])%p; return (x,(l*(P[0]-x)-P[1])%p)
def mul(k,P):
    R=None
    while k:
        if k&1: R=add(R,P)
        P=add(P,P); k>>=1
    return R
G=(Gx,Gy)
def i2b(x,l=32): return x.to_bytes(l,'big')
def run(args, inp=None):
    r=subprocess.run(args, input=inp, capture_output=True)
    if r.returncode: raise RuntimeError(r.stderr.decode())
    return r.stdout
def sm3_openssl(data):
    with tempfile.NamedTemporaryFile(delete=False) as f: f.write(data)
    out=run(["openssl","dgst","-sm3","-binary",f.name]); os.unlink(f.name); return out
def za(ident, P, sm3=sm3_openssl):
    entl=(len(ident)*8).to_bytes(2,'big')
    return sm3(entl+ident+i2b(a)+i2b(b)+i2b(Gx)+i2b(Gy)+i2b(P[0])+i2b(P[1]))
# minimal DER
def der_len(l):
    if l<128: return bytes([l])
    s=l.to_bytes((l.bit_length()+7)//8,'big'); return bytes([0x80|len(s)])+s
def tlv(t,v): return bytes([t])+der_len(len(v))+v
def der_int(x):
    s=x.to_bytes(max(1,(x.bit_length()+7)//8),'big')
    if s[0]&0x80: s=b"\0"+s
    return tlv(2,s)
def sig_der(r,s): return tlv(0x30, der_int(r)+der_int(s))
def parse_der(buf):
    # returns list of (tag, value) for a SEQUENCE's children
    assert buf[0]==0x30
    def rd(b,i):
        t=b[i]; l=b[i+1]; i+=2
        if l&0x80:
            k=l&0x7f; l=int.from_bytes(b[i:i+k],'big'); i+=k
        return t,b[i:i+l],i+l
    t,v,end=rd(buf,0); assert end==len(buf), "trailing data"
    out=[]; i=0
    while i<len(v):
        t,c,i=rd(v,i); out.append((t,c))
    return out
SM2_OID=bytes.fromhex("06082a811ccf5501822d")
def sec1_priv_der(d, with_pub=None):
    body=der_int(1)+tlv(4,i2b(d))+tlv(0xa0,SM2_OID)
    if with_pub: body+=tlv(0xa1, tlv(3, b"\0"+b"\x04"+i2b(with_pub[0])+i2b(with_pub[1])))
    return tlv(0x30,body)
def spki_der(P):
    alg=tlv(0x30, bytes.fromhex("06072a8648ce3d0201")+SM2_OID)
    return tlv(0x30, alg+tlv(3,b"\0\x04"+i2b(P[0])+i2b(P[1])))
def write_keys(dirn, d, P):
    kd=os.path.join(dirn,"k.der"); open(kd,"wb").write(sec1_priv_der(d))  # no pub: openssl derives it
    kp=os.path.join(dirn,"k.pem"); run(["openssl","pkey","-inform","DER","-in",kd,"-out",kp])
    pd=os.path.join(dirn,"p.der"); open(pd,"wb").write(spki_der(P))
    pp=os.path.join(dirn,"p.pem"); run(["openssl","pkey","-pubin","-inform","DER","-in",pd,"-out",pp])
    return kp,pp
def openssl_pub_from_priv(kp):
    der=run(["openssl","pkey","-in",kp,"-pubout","-outform","DER"])
    assert der[-65]==4; return (int.from_bytes(der[-64:-32],'big'), int.from_bytes(der[-32:],'big'))
def openssl_priv_hex(kp):
    txt=run(["openssl","pkey","-in",kp,"-text","-noout"]).decode()
    lines=txt.split("\n"); i=[j for j,l in enumerate(lines) if l.startswith("priv:")][0]
    h=""
    for l in lines[i+1:]:
        if not l.startswith(" "): break
        h+=l.strip().replace(":","")
    return int(h,16)
def kdf(z,klen,sm3=sm3_openssl):
    out=b""; ct=1
    while len(out)<klen:
        out+=sm3(z+ct.to_bytes(4,'big')); ct+=1
    return out[:klen]

# ---- SM3 / SM4 / SM4-GCM / SM2 files
# re-verify the final files in tests/data from their contents only
import json, sys, os, tempfile
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
D=os.path.dirname(os.path.abspath(__file__)); H=bytes.fromhex
L=lambda f: json.load(open(os.path.join(D,f)))
for v in L("sm3.json")["vectors"]:
    m=H(v["msg_hex"]); h=hashes.Hash(hashes.SM3()); h.update(m)
    assert sm3_openssl(m).hex()==v["digest_hex"]==h.finalize().hex()==(gmssl_pyx.sm3_hash(m).hex() if gmssl_pyx else v['digest_hex'])
for v in L("sm4.json")["vectors"]:
    e=Cipher(algorithms.SM4(H(v["key_hex"])),modes.ECB()).encryptor(); x=H(v["plaintext_hex"])
    for _ in range(v["iterations"]): x=e.update(x)
    assert x.hex()==v["ciphertext_hex"]
for v in L("sm4_gcm.json")["vectors"]:
    dd=Cipher(algorithms.SM4(H(v["key_hex"])),modes.GCM(H(v["iv_hex"]),H(v["tag_hex"]))).decryptor(); dd.authenticate_additional_data(H(v["aad_hex"]))
    assert dd.update(H(v["ciphertext_hex"]))+dd.finalize()==H(v["plaintext_hex"])
    if gmssl_pyx: assert gmssl_pyx.sm4_gcm_decrypt(H(v["key_hex"]),H(v["iv_hex"]),H(v["aad_hex"]),H(v["ciphertext_hex"]),H(v["tag_hex"]))==H(v["plaintext_hex"])
W=tempfile.mkdtemp()
def keyfiles(v):
    d=int(v["private_key_hex"],16); P=(int(v["public_key_hex"][2:66],16),int(v["public_key_hex"][66:],16))
    assert v["public_key_hex"][:2]=="04" and mul(d,G)==P
    kd=tempfile.mkdtemp(dir=W); kp,pp=write_keys(kd,d,P); assert openssl_pub_from_priv(kp)==P
    return d,P,kp,pp
ns=0
for v in L("sm2_sign.json")["vectors"]:
    d,P,kp,pp=keyfiles(v); ident=H(v["id_hex"]); m=H(v["msg_hex"])
    if v["id_ascii"] is not None: assert v["id_ascii"].encode()==ident
    if v["msg_ascii"] is not None: assert v["msg_ascii"].encode()==m
    Z=za(ident,P); assert Z.hex()==v["za_hex"]; e=sm3_openssl(Z+m); assert e.hex()==v["e_hex"]
    r=int(v["r_hex"],16); s=int(v["s_hex"],16); assert sig_der(r,s).hex()==v["signature_der_hex"]
    mf=os.path.join(W,"m"); open(mf,"wb").write(m); sf=os.path.join(W,"s"); open(sf,"wb").write(H(v["signature_der_hex"]))
    assert b"Verified OK" in run(["openssl","dgst","-sm3","-verify",pp,"-sigopt","distid:"+ident.decode(),"-signature",sf,mf])
    if gmssl_pyx: assert gmssl_pyx.sm2_verify(i2b(P[0])+i2b(P[1]),m,H(v["signature_der_hex"]),ident)
    if v["k_hex"]:
        k=int(v["k_hex"],16); assert r==(int.from_bytes(e,'big')+mul(k,G)[0])%n and s==pow(1+d,-1,n)*(k-r*d)%n
    ns+=1
ne=0
for v in L("sm2_enc.json")["vectors"]:
    d,P,kp,pp=keyfiles(v); m=H(v["msg_hex"]); ct=H(v["ciphertext_der_hex"])
    if v["msg_ascii"] is not None: assert v["msg_ascii"].encode()==m
    cf=os.path.join(W,"c"); open(cf,"wb").write(ct)
    assert run(["openssl","pkeyutl","-decrypt","-inkey",kp,"-in",cf])==m
    if gmssl_pyx and len(ct)<=366: assert gmssl_pyx.sm2_decrypt(i2b(d),ct)==m
    parts=parse_der(ct); C1=(int.from_bytes(parts[0][1],'big'),int.from_bytes(parts[1][1],'big'))
    assert v["c1_hex"]=="04"+i2b(C1[0]).hex()+i2b(C1[1]).hex() and v["c3_hex"]==parts[2][1].hex() and v["c2_hex"]==parts[3][1].hex()
    assert v["ciphertext_c1c3c2_hex"]==v["c1_hex"]+v["c3_hex"]+v["c2_hex"]
    if v["k_hex"]: assert mul(int(v["k_hex"],16),G)==C1
    ne+=1
print("all SM files re-verified; sm2 sign vectors:",ns,"enc vectors:",ne)

# ---- Wycheproof files (pyca/cryptography)
import json, os, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.exceptions import InvalidSignature, InvalidTag
H=bytes.fromhex
def load(f): return json.load(open(os.path.join(D,f)))
def report(name, res, skipped=()):
    # res: list of (tcId, expected, accepted); "acceptable" may go either way
    bad=[(i,e,o) for i,e,o in res if (e=="valid" and not o) or (e=="invalid" and o)]
    acc=[(i,o) for i,e,o in res if e=="acceptable"]
    print(f"{name}: {len(res)} tests checked, {len(bad)} mismatches, acceptable (tcId, accepted)={acc}, skipped={list(skipped)}")
    assert not bad, bad[:5]
def aead(fname, mk):
    d=load(fname); res=[]; skipped=[]
    assert d["numberOfTests"]==sum(len(g["tests"]) for g in d["testGroups"]), "count"
    for g in d["testGroups"]:
        for t in g["tests"]:
            iv=H(t["iv"])
            if not 8<=len(iv)<=128 and t["result"]=="valid":
                skipped.append(t["tcId"]); continue   # IV length outside pyca/cryptography's GCM API range
            try:
                pt=mk(H(t["key"]),iv,H(t["ct"]),H(t["tag"]),H(t["aad"]))
                ok = pt==H(t["msg"])
            except (InvalidTag, ValueError) as e:
                ok=False
            res.append((t["tcId"],t["result"],ok))
    report(fname,res,skipped)
def aesgcm(k,iv,ct,tag,aad): return AESGCM(k).decrypt(iv,ct+tag,aad)
def sm4gcm(k,iv,ct,tag,aad):
    dec=Cipher(algorithms.SM4(k),modes.GCM(iv,tag)).decryptor()
    dec.authenticate_additional_data(aad); return dec.update(ct)+dec.finalize()
aead("wycheproof_aes_gcm.json", aesgcm)
aead("wycheproof_sm4_gcm.json", sm4gcm)
for f,h in [("wycheproof_hmac_sha256.json",hashes.SHA256()),("wycheproof_hmac_sha384.json",hashes.SHA384()),("wycheproof_hmac_sha512.json",hashes.SHA512()),("wycheproof_hmac_sm3.json",hashes.SM3())]:
    d=load(f); res=[]
    assert d["numberOfTests"]==sum(len(g["tests"]) for g in d["testGroups"])
    for g in d["testGroups"]:
        for t in g["tests"]:
            m=hmac.HMAC(H(t["key"]),h); m.update(H(t["msg"])); full=m.finalize()
            res.append((t["tcId"],t["result"], full[:g["tagSize"]//8]==H(t["tag"])))
    report(f,res)
HM={"SHA-256":hashes.SHA256,"SHA-384":hashes.SHA384,"SHA-512":hashes.SHA512}
for f in ["wycheproof_rsa_pss_2048_sha256_mgf1_32.json","wycheproof_rsa_pss_3072_sha256_mgf1_32.json"]:
    d=load(f); res=[]
    for g in d["testGroups"]:
        pk=serialization.load_der_public_key(H(g["publicKeyDer"]))
        pad=padding.PSS(mgf=padding.MGF1(HM[g["mgfSha"]]()), salt_length=g["sLen"])
        for t in g["tests"]:
            try: pk.verify(H(t["sig"]),H(t["msg"]),pad,HM[g["sha"]]()); ok=True
            except (InvalidSignature, ValueError): ok=False
            res.append((t["tcId"],t["result"],ok))
    report(f,res)
d=load("wycheproof_rsa_signature_2048_sha256.json"); res=[]
assert d["numberOfTests"]==sum(len(g["tests"]) for g in d["testGroups"])
for g in d["testGroups"]:
    pk=serialization.load_der_public_key(H(g["publicKeyDer"]))
    for t in g["tests"]:
        try: pk.verify(H(t["sig"]),H(t["msg"]),padding.PKCS1v15(),HM[g["sha"]]()); ok=True
        except (InvalidSignature, ValueError): ok=False
        res.append((t["tcId"],t["result"],ok))
report("wycheproof_rsa_signature_2048_sha256.json",res)
d=load("wycheproof_rsa_oaep_2048_sha256_mgf1sha256.json"); res=[]
for g in d["testGroups"]:
    sk=serialization.load_der_private_key(H(g["privateKeyPkcs8"]),None)
    for t in g["tests"]:
        try:
            pt=sk.decrypt(H(t["ct"]),padding.OAEP(mgf=padding.MGF1(HM[g["mgfSha"]]()),algorithm=HM[g["sha"]](),label=H(t["label"]) or None)); ok= pt==H(t["msg"])
        except ValueError: ok=False
        res.append((t["tcId"],t["result"],ok))
report("wycheproof_rsa_oaep_2048_sha256_mgf1sha256.json",res)

# ---- Wycheproof SM4-GCM again with a pure-Python GCM over SM4-ECB (covers IV lengths the library API rejects)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
H=bytes.fromhex
def gf_mul(x,y):
    R=0xE1<<120; z=0; v=x
    for i in range(127,-1,-1):
        if (y>>i)&1: z^=v
        v = (v>>1)^R if v&1 else v>>1
    return z
def ghash(h,data):
    y=0
    for i in range(0,len(data),16):
        y=gf_mul(y^int.from_bytes(data[i:i+16],'big'),h)
    return y
def pad(b): return b+b"\0"*((-len(b))%16)
def gcm_dec(k,iv,ct,tag,aad):
    e=Cipher(algorithms.SM4(k),modes.ECB()).encryptor()
    E=lambda b:e.update(b)
    h=int.from_bytes(E(b"\0"*16),'big')
    if len(iv)==12: j0=iv+b"\0\0\0\1"
    else: j0=ghash(h,pad(iv)+(0).to_bytes(8,'big')+(len(iv)*8).to_bytes(8,'big')).to_bytes(16,'big')
    def inc(c): return c[:12]+((int.from_bytes(c[12:],'big')+1)%2**32).to_bytes(4,'big')
    cb=j0; pt=b""
    for i in range(0,len(ct),16):
        cb=inc(cb); ks=E(cb); blk=ct[i:i+16]; pt+=bytes(a^b for a,b in zip(blk,ks))
    s=ghash(h,pad(aad)+pad(ct)+(len(aad)*8).to_bytes(8,'big')+(len(ct)*8).to_bytes(8,'big'))
    t=(int.from_bytes(E(j0),'big')^s).to_bytes(16,'big')[:len(tag)]
    return pt, t==tag
d=json.load(open(os.path.join(D,"wycheproof_sm4_gcm.json")))
bad=[]; n=0; gm=0
for g in d["testGroups"]:
    for t in g["tests"]:
        n+=1
        k,iv,ct,tag,aad,msg=[H(t[x]) for x in ("key","iv","ct","tag","aad","msg")]
        if len(iv)==0: ok=False
        else:
            pt,tok=gcm_dec(k,iv,ct,tag,aad); ok= tok and pt==msg
        if (t["result"]=="valid")!=ok: bad.append(t["tcId"])
        if gmssl_pyx and 1<=len(iv)<=64 and len(msg)>0:  # gmssl-pyx rejects empty plaintext
            try: gok = gmssl_pyx.sm4_gcm_decrypt(k,iv,aad,ct,tag)==msg
            except Exception: gok=False
            gm+=1
            if (t["result"]=="valid")!=gok: bad.append(("gmssl",t["tcId"]))
print("wycheproof_sm4_gcm.json: pure-Python GCM over cryptography SM4-ECB:",n,"tests; also checked with gmssl-pyx:",gm,"; mismatches:",bad)
assert not bad
print("ALL CHECKS PASSED")
