// Counts images that failed to load, for headless checks: body[data-broken-images] / [data-images].
(function(){function mark(){var im=document.images,n=0;for(var i=0;i<im.length;i++){
if(!im[i].complete||im[i].naturalWidth===0){n++;im[i].setAttribute('data-broken','1');}}
document.body.setAttribute('data-broken-images',String(n));document.body.setAttribute('data-images',String(im.length));}
if(document.readyState==='complete'){mark();}else{window.addEventListener('load',mark);}})();
